package dev.stompede.springchat;

import org.springframework.boot.autoconfigure.kafka.ConcurrentKafkaListenerContainerFactoryConfigurer;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.kafka.config.ConcurrentKafkaListenerContainerFactory;
import org.springframework.kafka.core.ConsumerFactory;

/**
 * Producer and consumer settings come from {@code application.properties}; this only adds
 * the rebalance listener that {@code /healthz} and {@code /metrics} read.
 */
@Configuration
public class KafkaConfig {

    @Bean
    public FanoutAssignment fanoutAssignment() {
        return new FanoutAssignment();
    }

    @Bean
    public ConcurrentKafkaListenerContainerFactory<Object, Object> kafkaListenerContainerFactory(
            ConcurrentKafkaListenerContainerFactoryConfigurer configurer,
            ConsumerFactory<Object, Object> consumerFactory,
            FanoutAssignment fanoutAssignment) {
        ConcurrentKafkaListenerContainerFactory<Object, Object> factory = new ConcurrentKafkaListenerContainerFactory<>();
        configurer.configure(factory, consumerFactory);
        factory.getContainerProperties().setConsumerRebalanceListener(fanoutAssignment);
        return factory;
    }
}
