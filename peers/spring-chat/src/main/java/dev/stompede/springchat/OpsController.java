package dev.stompede.springchat;

import java.util.concurrent.atomic.LongAdder;
import org.apache.kafka.common.TopicPartition;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.context.event.ApplicationReadyEvent;
import org.springframework.context.event.EventListener;
import org.springframework.http.HttpStatus;
import org.springframework.http.MediaType;
import org.springframework.http.ResponseEntity;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.RestController;

/** {@code GET /healthz} and {@code GET /metrics} (Prometheus text format 0.0.4). */
@RestController
public class OpsController {

    private static final MediaType TEXT = MediaType.parseMediaType("text/plain; charset=utf-8");
    private static final MediaType PROMETHEUS = MediaType.parseMediaType("text/plain; version=0.0.4; charset=utf-8");

    private final ChatMetrics metrics;
    private final FanoutAssignment assignment;
    private final String instance;
    private final String topic;
    private final String group;
    private volatile boolean ready;

    public OpsController(ChatMetrics metrics, FanoutAssignment assignment,
                         @Value("${chat.instance-id}") String instance,
                         @Value("${chat.topic}") String topic,
                         @Value("${chat.group-id}") String group) {
        this.metrics = metrics;
        this.assignment = assignment;
        this.instance = instance;
        this.topic = topic;
        this.group = group;
    }

    @EventListener(ApplicationReadyEvent.class)
    public void onReady() {
        ready = true;
    }

    @GetMapping("/healthz")
    public ResponseEntity<String> healthz() {
        if (!ready) {
            return text(HttpStatus.SERVICE_UNAVAILABLE, "starting: application not ready yet\n");
        }
        if (!assignment.hasHadAssignment()) {
            return text(HttpStatus.SERVICE_UNAVAILABLE,
                    "starting: fan-out consumer has no partition assignment yet\n");
        }
        return text(HttpStatus.OK, "ok\n");
    }

    @GetMapping("/metrics")
    public ResponseEntity<String> metrics() {
        String inst = escape(instance);
        StringBuilder out = new StringBuilder(2048);
        out.append("# HELP stompede_server_info Server instance identity.\n")
           .append("# TYPE stompede_server_info gauge\n")
           .append("stompede_server_info{instance=\"").append(inst)
           .append("\",persist=\"producer\",topic=\"").append(escape(topic))
           .append("\",impl=\"spring\",group=\"").append(escape(group)).append("\"} 1\n");
        out.append("# HELP stompede_server_assigned_partition Partitions currently assigned to the fan-out consumer.\n")
           .append("# TYPE stompede_server_assigned_partition gauge\n");
        for (TopicPartition tp : assignment.assigned()) {
            out.append("stompede_server_assigned_partition{instance=\"").append(inst)
               .append("\",topic=\"").append(escape(tp.topic()))
               .append("\",partition=\"").append(tp.partition()).append("\"} 1\n");
        }
        counter(out, "stompede_spring_sends_total", "SENDs received by the chat controller.", metrics.sends, inst);
        counter(out, "stompede_spring_published_total", "Records acknowledged by Kafka.", metrics.published, inst);
        counter(out, "stompede_spring_publish_failures_total", "Records Kafka did not acknowledge.", metrics.publishFailures, inst);
        counter(out, "stompede_spring_persisted_total", "History rows saved after the Kafka ack.", metrics.persisted, inst);
        counter(out, "stompede_spring_persist_failures_total", "History rows that could not be saved.", metrics.persistFailures, inst);
        counter(out, "stompede_spring_fanout_total", "Records broadcast to this instance's subscribers.", metrics.fanout, inst);
        counter(out, "stompede_spring_rejected_total", "SENDs dropped because the body's roomId differs from the destination's.", metrics.rejected, inst);
        return ResponseEntity.ok().contentType(PROMETHEUS).body(out.toString());
    }

    private static void counter(StringBuilder out, String name, String help, LongAdder value, String inst) {
        out.append("# HELP ").append(name).append(' ').append(help).append('\n')
           .append("# TYPE ").append(name).append(" counter\n")
           .append(name).append("{instance=\"").append(inst).append("\"} ").append(value.sum()).append('\n');
    }

    /** Label value escaping of the Prometheus text format: backslash, double quote, newline. */
    static String escape(String value) {
        StringBuilder sb = new StringBuilder(value.length());
        for (int i = 0; i < value.length(); i++) {
            char c = value.charAt(i);
            switch (c) {
                case '\\' -> sb.append("\\\\");
                case '"' -> sb.append("\\\"");
                case '\n' -> sb.append("\\n");
                default -> sb.append(c);
            }
        }
        return sb.toString();
    }

    private static ResponseEntity<String> text(HttpStatus status, String body) {
        return ResponseEntity.status(status).contentType(TEXT).body(body);
    }
}
