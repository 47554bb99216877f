"""Benchmarks (`lite-cpt bench ...`) and the calibration that turns measured throughputs into the
planner's time plan; nothing here runs during training."""
