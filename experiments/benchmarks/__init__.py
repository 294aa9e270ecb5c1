"""Speed benchmarks and the GPU command; their JSON goes to experiments/results/."""
