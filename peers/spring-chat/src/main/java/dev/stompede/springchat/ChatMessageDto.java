package dev.stompede.springchat;

/**
 * The chat message as it travels: the JSON body of a STOMP SEND, the Kafka record value
 * and the body of every MESSAGE pushed to subscribers:
 * {@code {"roomId", "sender", "message", "type"}}.
 */
public record ChatMessageDto(String roomId, String sender, String message, MessageType type) {

    public ChatMessageDto withRoomId(String roomId) {
        return new ChatMessageDto(roomId, sender, message, type);
    }
}
