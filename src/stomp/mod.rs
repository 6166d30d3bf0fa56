//! STOMP codec
