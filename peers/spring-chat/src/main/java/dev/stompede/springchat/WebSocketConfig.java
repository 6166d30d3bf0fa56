package dev.stompede.springchat;

import org.springframework.beans.factory.annotation.Value;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.messaging.simp.config.MessageBrokerRegistry;
import org.springframework.web.socket.config.annotation.EnableWebSocketMessageBroker;
import org.springframework.web.socket.config.annotation.StompEndpointRegistry;
import org.springframework.web.socket.config.annotation.WebSocketMessageBrokerConfigurer;
import org.springframework.web.socket.config.annotation.WebSocketTransportRegistration;
import org.springframework.web.socket.server.standard.ServletServerContainerFactoryBean;

@Configuration
@EnableWebSocketMessageBroker
public class WebSocketConfig implements WebSocketMessageBrokerConfigurer {

    /** Room for a 32 KiB chat text plus its JSON and STOMP framing. */
    static final int MAX_MESSAGE_BYTES = 64 * 1024;

    /**
     * Spring hands one session's inbound frames, and the frames bound for one session, to
     * thread pools: without these two switches a client's SENDs can reach Kafka in
     * another order than it sent them, and its MESSAGEs can overtake each other. Chat
     * needs order per room, so they are on unless {@code chat.preserve-order=false}.
     */
    private final boolean preserveOrder;

    public WebSocketConfig(@Value("${chat.preserve-order:true}") boolean preserveOrder) {
        this.preserveOrder = preserveOrder;
    }

    @Override
    public void registerStompEndpoints(StompEndpointRegistry registry) {
        // Plain WebSocket, no SockJS fallback.
        registry.addEndpoint("/ws-stomp").setAllowedOriginPatterns("*");
        registry.setPreserveReceiveOrder(preserveOrder);
    }

    @Override
    public void configureMessageBroker(MessageBrokerRegistry registry) {
        registry.enableSimpleBroker("/topic");
        registry.setApplicationDestinationPrefixes("/app");
        registry.setPreservePublishOrder(preserveOrder);
    }

    @Override
    public void configureWebSocketTransport(WebSocketTransportRegistration registration) {
        registration.setMessageSizeLimit(MAX_MESSAGE_BYTES);
    }

    @Bean
    public ServletServerContainerFactoryBean createWebSocketContainer() {
        ServletServerContainerFactoryBean container = new ServletServerContainerFactoryBean();
        container.setMaxTextMessageBufferSize(MAX_MESSAGE_BYTES);
        container.setMaxBinaryMessageBufferSize(MAX_MESSAGE_BYTES);
        return container;
    }
}
