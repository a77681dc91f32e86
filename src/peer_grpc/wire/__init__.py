"""The gRPC glue both ends share: the contract's service, rich statuses both ways, TLS
credentials, and conversions between the core's values and the contract's messages."""
