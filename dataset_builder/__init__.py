"""VideoMarathon and the training mixtures as Hugging Face datasets (issue 5), and the synthetic videos the tests,
benchmarks and demos use."""
