package dev.stompede.springchat;

import jakarta.persistence.Column;
import jakarta.persistence.Entity;
import jakarta.persistence.EnumType;
import jakarta.persistence.Enumerated;
import jakarta.persistence.GeneratedValue;
import jakarta.persistence.GenerationType;
import jakarta.persistence.Id;
import jakarta.persistence.Table;
import java.time.OffsetDateTime;

/** One row of chat history (table {@code chat_message}, created by {@code schema.sql}). */
@Entity
@Table(name = "chat_message")
public class ChatMessage {

    @Id
    @GeneratedValue(strategy = GenerationType.IDENTITY)
    private Long id;

    @Column(name = "room_id", nullable = false)
    private String roomId;

    @Column(nullable = false)
    private String sender;

    @Column(nullable = false)
    private String message;

    @Enumerated(EnumType.STRING)
    @Column(nullable = false)
    private MessageType type;

    @Column(name = "send_date", nullable = false)
    private OffsetDateTime sendDate;

    protected ChatMessage() {
    }

    public ChatMessage(String roomId, String sender, String message, MessageType type, OffsetDateTime sendDate) {
        this.roomId = roomId;
        this.sender = sender;
        this.message = message;
        this.type = type;
        this.sendDate = sendDate;
    }

    public static ChatMessage of(ChatMessageDto dto) {
        return new ChatMessage(dto.roomId(), dto.sender(), dto.message(), dto.type(), OffsetDateTime.now());
    }

    public Long getId() {
        return id;
    }

    public String getRoomId() {
        return roomId;
    }

    public String getSender() {
        return sender;
    }

    public String getMessage() {
        return message;
    }

    public MessageType getType() {
        return type;
    }

    public OffsetDateTime getSendDate() {
        return sendDate;
    }
}
