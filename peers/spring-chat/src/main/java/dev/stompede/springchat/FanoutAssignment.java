package dev.stompede.springchat;

import java.util.Collection;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.common.TopicPartition;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Tracks the partitions currently assigned to the fan-out consumer, and whether it has had
 * its first assignment (an empty one counts: with a shared group an instance may get none).
 */
public class FanoutAssignment implements ConsumerRebalanceListener {

    private static final Logger log = LoggerFactory.getLogger(FanoutAssignment.class);

    private final Set<TopicPartition> assigned = ConcurrentHashMap.newKeySet();
    private volatile boolean firstAssignment;

    @Override
    public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
        assigned.removeAll(partitions);
    }

    @Override
    public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
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
