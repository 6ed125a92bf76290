"""The decision and feedback logs.

`KafkaEventLog` is what deployments use: every event is written to a durable local outbox before
it is acknowledged, and shipped to Kafka by a background thread that survives broker outages;
processes sharing an outbox directory each write a slot of their own and ship what a stopped one left.
`FileEventLog` keeps the same events in segment files for embedded runs. `open_event_log` picks one
from the infrastructure settings; `scan_topic` reads a whole topic once, for analyses, and
`TopicReader` reads it again and again, each time only what is new (for pollers), the embedded
log's sealed segments handed out as files to read elsewhere if asked (`SealedSegment`), as are
the records a reader found without reading them (`LogSlice`, from `SegmentLog.find`);
`seek_to_first_record` is how every Kafka reader starts from the beginning.
"""

from ._logs import EventLog, FileEventLog, KafkaEventLog, KeyedRecord, ensure_topics
from ._open import open_event_log
from ._outbox import decode_record, encode_record
from ._scan import TopicReader, scan_topic, seek_to_first_record
from ._segments import LogSlice, Position, SealedSegment, SegmentLog

__all__ = [
    "EventLog",
    "FileEventLog",
    "KafkaEventLog",
    "KeyedRecord",
    "LogSlice",
    "Position",
    "SealedSegment",
    "SegmentLog",
    "TopicReader",
    "decode_record",
    "encode_record",
    "ensure_topics",
    "open_event_log",
    "scan_topic",
    "seek_to_first_record",
]
