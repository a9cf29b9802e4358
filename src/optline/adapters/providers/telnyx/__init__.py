"""telnyx: send.py (outbound) and webhook.py (inbound and status callbacks)."""
