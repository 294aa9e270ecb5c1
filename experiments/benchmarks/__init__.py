"""Speed benchmarks; their JSON goes to experiments/results/."""
