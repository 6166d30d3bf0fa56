package dev.stompede.springchat;

public enum MessageType {
    ENTER,
    TALK,
    LEAVE
}
