"""The Kafka side: exactly-once consume→process→produce around any `shared.step.Step`."""
