"""Training transformers from scratch on a task's programs (binding, for now): data splits,
architectures, the optimisation step, evaluation during training, and the `Trainer` that fits,
evaluates and saves (checkpoints through `bindexp.io.checkpoints`). The job is bindexp.jobs.train."""
