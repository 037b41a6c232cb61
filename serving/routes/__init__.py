"""HTTP routes; each module is thin: parse, call the service, serialise."""
