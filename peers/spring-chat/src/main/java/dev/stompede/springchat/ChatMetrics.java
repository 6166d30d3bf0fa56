package dev.stompede.springchat;

import java.util.concurrent.atomic.LongAdder;
import org.springframework.stereotype.Component;

/** The counters behind {@code /metrics}. */
@Component
public class ChatMetrics {

    /** SENDs received by the controller. */
    public final LongAdder sends = new LongAdder();
    /** Kafka acknowledged the record. */
    public final LongAdder published = new LongAdder();
    /** Kafka refused the record or the send timed out. */
    public final LongAdder publishFailures = new LongAdder();
    /** Rows saved after the ack. */
    public final LongAdder persisted = new LongAdder();
    /** Rows that could not be saved. */
    public final LongAdder persistFailures = new LongAdder();
    /** Records read by the fan-out listener and broadcast to subscribers. */
    public final LongAdder fanout = new LongAdder();
    /** SENDs dropped because the body's roomId differs from the destination's. */
    public final LongAdder rejected = new LongAdder();
}
