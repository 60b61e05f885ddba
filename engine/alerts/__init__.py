"""Alert rules checked on a schedule, sent to the log, webhooks and email with a cool-down."""
