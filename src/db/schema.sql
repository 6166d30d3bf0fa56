-- stompede chat history. Applied by `stompede stack up` and by the server at start-up
-- (idempotent). One row per chat message that Kafka accepted; its Kafka position (cluster
-- id, topic, partition, offset) is unique, so a retried batch can never write a message
-- twice, and a Kafka cluster rebuilt from scratch (offsets restarting at 0) can never
-- collide with the history of the old one.
CREATE TABLE IF NOT EXISTS chat_messages (
    id              BIGSERIAL PRIMARY KEY,
    room_id         TEXT        NOT NULL,
    sender          TEXT        NOT NULL,
    message         TEXT        NOT NULL,
    type            TEXT        NOT NULL CHECK (type IN ('ENTER', 'TALK', 'LEAVE')),
    sent_at         TIMESTAMPTZ NOT NULL,
    kafka_cluster   TEXT        NOT NULL DEFAULT '',
    kafka_topic     TEXT        NOT NULL,
    kafka_partition INTEGER     NOT NULL,
    kafka_offset    BIGINT      NOT NULL,
    CONSTRAINT chat_messages_kafka_position UNIQUE (kafka_cluster, kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX IF NOT EXISTS chat_messages_room_idx ON chat_messages (room_id, id);
