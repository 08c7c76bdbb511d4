"""Code every service uses: the step contract, the Kafka runtime, serdes, config, metrics."""
