package dev.stompede.springchat;

import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.messaging.simp.SimpMessagingTemplate;
import org.springframework.stereotype.Component;

/**
 * Reads every chat record from Kafka and broadcasts it to this instance's subscribers of
 * {@code /topic/room/{roomId}}.
 *
 * <p>Every server instance needs a different group id so that every instance sees every
 * message: the default {@code chat.group-id} is {@code stompede-fanout-${chat.instance-id}}.
 * Giving all instances the same group id splits the partitions between them, and each
 * instance's subscribers then miss the rooms whose partitions another instance holds.
 */
@Component
public class FanoutListener {

    private final SimpMessagingTemplate messagingTemplate;
    private final ChatMetrics metrics;

    public FanoutListener(SimpMessagingTemplate messagingTemplate, ChatMetrics metrics) {
        this.messagingTemplate = messagingTemplate;
        this.metrics = metrics;
    }

    @KafkaListener(id = "fanout", topics = "${chat.topic}", groupId = "${chat.group-id}")
    public void listen(ChatMessageDto dto) {
        messagingTemplate.convertAndSend("/topic/room/" + dto.roomId(), dto);
        metrics.fanout.increment();
    }
}
