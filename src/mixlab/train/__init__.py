"""Training: the loop (:mod:`.loop`), checkpoints (:mod:`.checkpoint`), hooks and metric sinks
(:mod:`.callbacks`)."""
