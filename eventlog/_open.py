"""Opening the event log the infrastructure settings name."""

from closedloop.contracts import InfrastructureConfig, Topics

from ._logs import EventLog, FileEventLog, KafkaEventLog


def open_event_log(infrastructure: InfrastructureConfig) -> EventLog:
    """Kafka (behind an outbox under ``data_dir``) when ``kafka_bootstrap`` is set, else files."""
    if infrastructure.kafka_bootstrap:
        topics = Topics(infrastructure.topic_prefix)
        return KafkaEventLog(
            infrastructure.kafka_bootstrap,
            infrastructure.data_path / "outbox",
            topics=[topics.decisions, topics.feedback],
        )
    return FileEventLog(infrastructure.data_path / "events")
