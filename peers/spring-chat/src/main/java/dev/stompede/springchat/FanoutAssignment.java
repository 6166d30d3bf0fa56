package dev.stompede.springchat;

import java.util.Collection;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.kafka.clients.consumer.Consumer;
import org.apache.kafka.common.TopicPartition;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.kafka.listener.ConsumerAwareRebalanceListener;

/**
 * Tracks the partitions currently assigned to the fan-out consumer, and whether it has had
 * its first assignment (an empty one counts: with a shared group an instance may get none).
 * Each assigned partition's start offset is fixed ({@code position}) before the partition
 * counts, so a message sent once {@code /healthz} answers 200 is one the consumer will read.
 */
public class FanoutAssignment implements ConsumerAwareRebalanceListener {

    private static final Logger log = LoggerFactory.getLogger(FanoutAssignment.class);

    private final Set<TopicPartition> assigned = ConcurrentHashMap.newKeySet();
    private volatile boolean firstAssignment;

    @Override
    public void onPartitionsRevokedBeforeCommit(Consumer<?, ?> consumer, Collection<TopicPartition> partitions) {
        assigned.removeAll(partitions);
    }

    @Override
    public void onPartitionsLost(Consumer<?, ?> consumer, Collection<TopicPartition> partitions) {
        assigned.removeAll(partitions);
    }

    @Override
    public void onPartitionsAssigned(Consumer<?, ?> consumer, Collection<TopicPartition> partitions) {
        for (TopicPartition tp : partitions) {
            consumer.position(tp);
        }
        assigned.addAll(partitions);
        firstAssignment = true;
        log.info("fan-out consumer now holds {}", assigned());
    }

    public boolean hasHadAssignment() {
        return firstAssignment;
    }

    /** The assigned partitions, sorted by topic and partition. */
    public List<TopicPartition> assigned() {
        return assigned.stream()
                .sorted((a, b) -> a.topic().equals(b.topic())
                        ? Integer.compare(a.partition(), b.partition())
                        : a.topic().compareTo(b.topic()))
                .toList();
    }
}
