"""Running a recipe: the continual loop over arms and tasks, its units of work and their Ray
backend, evaluation, checkpoints, locks, preemption and the files a run leaves."""
