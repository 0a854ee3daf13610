"""Training transformers from scratch on binding programs: data splits, architectures, the
optimisation step, evaluation during training and checkpoints. The runner is bindexp.jobs.train."""
