CREATE TABLE IF NOT EXISTS chat_message (
    id        BIGSERIAL PRIMARY KEY,
    room_id   TEXT NOT NULL,
    sender    TEXT NOT NULL,
    message   TEXT NOT NULL,
    type      TEXT NOT NULL,
    send_date TIMESTAMPTZ NOT NULL
);
