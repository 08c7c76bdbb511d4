"""The Kafka service processes: the step runner, the sink and the coordinator."""
