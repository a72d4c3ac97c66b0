"""Events and webhooks (docs/webhooks.md): the outboxes the balance scripts and API writes
append to, the tenants' webhook subscriptions, and the dispatcher `ocs serve` runs to deliver
each event, signed, at least once and in order per subject."""
