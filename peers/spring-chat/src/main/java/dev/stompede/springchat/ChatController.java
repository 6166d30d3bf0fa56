package dev.stompede.springchat;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.messaging.handler.annotation.DestinationVariable;
import org.springframework.messaging.handler.annotation.MessageMapping;
import org.springframework.messaging.handler.annotation.Payload;
import org.springframework.stereotype.Controller;

/**
 * Receives chat messages sent to {@code /app/chat/{roomId}}, publishes them to Kafka keyed
 * by room and, once Kafka acknowledged, stores them in the history table.
 */
@Controller
public class ChatController {

    private static final Logger log = LoggerFactory.getLogger(ChatController.class);

    private final KafkaTemplate<String, ChatMessageDto> kafkaTemplate;
    private final ChatMessageRepository chatMessageRepository;
    private final ChatMetrics metrics;
    private final String topic;

    public ChatController(KafkaTemplate<String, ChatMessageDto> kafkaTemplate,
                          ChatMessageRepository chatMessageRepository,
                          ChatMetrics metrics,
                          @Value("${chat.topic}") String topic) {
        this.kafkaTemplate = kafkaTemplate;
        this.chatMessageRepository = chatMessageRepository;
        this.metrics = metrics;
        this.topic = topic;
    }

    @MessageMapping("/chat/{roomId}")
    public void message(@DestinationVariable String roomId, @Payload ChatMessageDto message) {
        metrics.sends.increment();
        ChatMessageDto dto = message;
        if (dto.roomId() == null || dto.roomId().isBlank()) {
            dto = dto.withRoomId(roomId);
        } else if (!dto.roomId().equals(roomId)) {
            metrics.rejected.increment();
            log.debug("dropped a message for room {} sent to room {}", dto.roomId(), roomId);
            return;
        }
        final ChatMessageDto toSend = dto;
        kafkaTemplate.send(topic, toSend.roomId(), toSend).whenComplete((result, ex) -> {
            if (ex != null) {
                metrics.publishFailures.increment();
                log.warn("publish to {} for room {} failed: {}", topic, toSend.roomId(), ex.toString());
                return;
            }
            metrics.published.increment();
            try {
                chatMessageRepository.save(ChatMessage.of(toSend));
                metrics.persisted.increment();
            } catch (RuntimeException e) {
                metrics.persistFailures.increment();
                log.warn("saving a message of room {} failed: {}", toSend.roomId(), e.toString());
            }
        });
    }
}
