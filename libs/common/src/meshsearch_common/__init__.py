"""Shared building blocks of every meshsearch service: settings, logging, errors,
the gRPC server bootstrap and the one client layer used for every service-to-service call."""
