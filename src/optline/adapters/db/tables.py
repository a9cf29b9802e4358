"""The database schema (SQLAlchemy Core). Alembic migrations are generated from this metadata.

Times are stored as UTC. ``JSON`` maps to JSONB-compatible json on PostgreSQL and TEXT on SQLite.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only autoincrements INTEGER PRIMARY KEY; BigInteger elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")
MAX_ID = 2**63 - 1  # the largest id either engine stores: every id a user types is checked against it first
UtcDateTime = DateTime(timezone=True)

programs = Table(
    "programs",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("brand", String(100), nullable=False),
    Column("sender_numbers", JSON, nullable=False, default=list),
    Column("short_code", String(20)),
    Column("help_text", Text, nullable=False),
    Column("help_contact", String(200)),  # customer care (URL, email or phone) named in the HELP reply
    Column("frequency_text", String(200), nullable=False),
    Column("terms_url", String(500)),
    Column("privacy_url", String(500)),
    Column("optout_scope", String(10), nullable=False, default="brand"),
    Column("double_opt_in", Boolean, nullable=False, default=False),
    Column("join_keywords", JSON, nullable=False, default=list),
    Column("settings", JSON, nullable=False, default=dict),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("optout_scope in ('program', 'brand')", name="optout_scope"),
)

contacts = Table(
    "contacts",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("phone", String(20), nullable=False, unique=True),
    Column("region", String(2)),
    Column("number_type", String(30), nullable=False, default="unknown"),
    Column("time_zone", String(64)),
    Column("time_zone_overridden", Boolean, nullable=False, default=False),
    Column("us_state", String(2)),
    Column("locale", String(10)),
    Column("attributes", JSON, nullable=False, default=dict),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Append-only (invariant 1). Never UPDATE or DELETE; PostgreSQL enforces it with a trigger (migration 0002).
consent_events = Table(
    "consent_events",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("contact_id", BigId, ForeignKey("contacts.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("program_id", BigId, ForeignKey("programs.id")),  # NULL: brand-wide
    Column("brand", String(100), nullable=False),
    Column("action", String(20), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("evidence", JSON, nullable=False, default=dict),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("contact_id", "seq", name="uq_consent_events_chain"),
    CheckConstraint(
        "action in ('opt_in', 'opt_in_confirmed', 'opt_out', 'review_hold', 'review_cleared')", name="action"
    ),
    CheckConstraint(
        "channel in ('sms_keyword', 'sms_text', 'web', 'api', 'import', 'provider', 'admin')", name="channel"
    ),
    Index("ix_consent_events_program_time", "program_id", "occurred_at"),
    # The dashboard's "opt-outs since" and its trend (services/dashboard.py) filter on the time of consent:
    # a range of this index reads the recent opt-outs only, however long the ledger.
    Index("ix_consent_events_action_time", "action", "occurred_at"),
    # The digest reads the chains that moved since the last one (adapters/db/ledger.py record_digest): a
    # range of this index, not a scan of every event ever recorded.
    Index("ix_consent_events_recorded", "recorded_at"),
)

# The projection of the ledger: written in the same transaction as the event that changes it.
subscriptions = Table(
    "subscriptions",
    metadata,
    Column("contact_id", BigId, ForeignKey("contacts.id"), primary_key=True),
    Column("program_id", BigId, ForeignKey("programs.id"), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("held", Boolean, nullable=False, default=False),
    Column("since", UtcDateTime, nullable=False),
    Column("last_event_id", BigId, ForeignKey("consent_events.id"), nullable=False),
    # The opt-in event that is the evidence for sending (NULL: no consent evidence, no marketing).
    Column("consent_event_id", BigId, ForeignKey("consent_events.id")),
    CheckConstraint("status in ('never', 'pending', 'subscribed', 'unsubscribed')", name="status"),
    Index("ix_subscriptions_program_status", "program_id", "status"),
)

ledger_digests = Table(
    "ledger_digests",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("chains", Integer, nullable=False),
    # Unique: each digest has one successor, so two writers extending the same digest (a fork that
    # verification would call tampering) cannot both be stored, whatever the locking.
    Column("prev_digest", String(64), nullable=False, unique=True),
    Column("digest", String(64), nullable=False),
    Index("ix_ledger_digests_created", "created_at"),  # /metrics' digest age: max() is one probe
)

# The chain heads each digest covered (heads that moved since the previous digest). Append-only too:
# verification checks that every head ever recorded here still exists with the same hash.
ledger_digest_heads = Table(
    "ledger_digest_heads",
    metadata,
    Column("digest_id", BigId, ForeignKey("ledger_digests.id"), primary_key=True),
    Column("contact_id", BigId, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

# A copy of every signed checkpoint this installation wrote (the original goes to the checkpoint log kept
# elsewhere). Only a convenience for proofs and the dashboard: each is checked against the signing key, and
# ``ledger verify --checkpoints`` trusts the external log, never this table.
ledger_checkpoints = Table(
    "ledger_checkpoints",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("digest_id", BigId, nullable=False),
    Column("body", Text, nullable=False),  # the checkpoint's JSON, signature included
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("program_id", BigId, ForeignKey("programs.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("template", Text, nullable=False),
    Column("message_type", String(20), nullable=False, default="marketing"),
    Column("tag", String(100)),
    Column("audience_filter", JSON, nullable=False, default=dict),
    Column("status", String(20), nullable=False, default="draft"),
    Column("scheduled_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    # Why a worker paused it (a provider configuration error: bad credentials, From not owned, out of
    # credit); cleared by resume. NULL when an operator paused it.
    Column("pause_reason", String(300)),
    CheckConstraint(
        "status in ('draft', 'scheduled', 'sending', 'paused', 'cancelled', 'done')", name="status"
    ),
    UniqueConstraint("program_id", "name", name="uq_campaigns_program_name"),
)

# The outbox: every message optline sends (campaign, confirmation, help, sign-up) passes through here.
messages = Table(
    "messages",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("campaign_id", BigId, ForeignKey("campaigns.id")),
    Column("program_id", BigId, ForeignKey("programs.id"), nullable=False),
    Column("contact_id", BigId, ForeignKey("contacts.id"), nullable=False),
    Column("kind", String(20), nullable=False),  # marketing, transactional, confirmation, help, signup
    # The claim's lane (services/outbox.py PRIORITY): 0 = replies to the person (confirmations, HELP,
    # sign-up prompts), claimed before anything else; 1 = campaigns and other bulk. A server default, so
    # that a campaign's INSERT … SELECT needs no extra column.
    Column("priority", SmallInteger, nullable=False, server_default=text("1")),
    Column("to_phone", String(20), nullable=False),
    Column("from_phone", String(20)),
    Column("body", Text, nullable=False),
    Column("segments", Integer, nullable=False, default=1),
    Column("status", String(20), nullable=False, default="queued"),
    Column("reason", String(200)),
    Column("idempotency_key", String(64), nullable=False, unique=True),
    Column("optout_token", String(16)),  # given at hand-over (dispatch), unique among those given
    Column("consent_event_id", BigId, ForeignKey("consent_events.id")),  # the consent that allowed it
    Column("provider", String(20)),
    Column("provider_message_id", String(100)),
    Column("error_code", String(50)),
    Column("error_message", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("not_before", UtcDateTime),
    Column("lease_owner", String(100)),
    Column("lease_expires_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("handed_over_at", UtcDateTime),
    Column("sent_at", UtcDateTime),
    Column("delivered_at", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint(
        "status in ('queued', 'claimed', 'sending', 'sent', 'delivered', 'undelivered', 'failed', "
        "'suppressed', 'deferred', 'cancelled', 'skipped')",
        name="status",
    ),
    # Partial indexes: a materialised audience inserts up to millions of queued rows in one statement, and
    # every index entry is a cost paid there. Rows without a token or a provider id are not indexed by
    # the two lookups that need them (queries compare with ``=``, which implies IS NOT NULL on both
    # engines, so the planners use them).
    Index("ix_messages_claim", "status", "not_before"),
    # The reply lane: a partial index over the few reply rows, so that claiming them never scans or sorts
    # a queued campaign, and a campaign's rows cost no entry in it.
    Index(
        "ix_messages_reply_lane",
        "status",
        "not_before",
        sqlite_where=text("priority = 0"),
        postgresql_where=text("priority = 0"),
    ),
    # /metrics' age of the oldest queued message per lane (adapters/metrics.py): one probe per lane. Only
    # queued rows are in it: an entry is added at enqueue and removed at the claim, so it stays as small as
    # the queue and costs the delivered history nothing.
    Index(
        "ix_messages_queued_age",
        "priority",
        "created_at",
        sqlite_where=text("status = 'queued'"),
        postgresql_where=text("status = 'queued'"),
    ),
    Index("ix_messages_campaign_status", "campaign_id", "status"),
    Index("ix_messages_contact_time", "contact_id", "created_at"),
    Index(
        "ix_messages_provider_id",
        "provider",
        "provider_message_id",
        sqlite_where=text("provider_message_id IS NOT NULL"),
        postgresql_where=text("provider_message_id IS NOT NULL"),
    ),
    Index(
        "uq_messages_optout_token",
        "optout_token",
        unique=True,
        sqlite_where=text("optout_token IS NOT NULL"),
        postgresql_where=text("optout_token IS NOT NULL"),
    ),
)

# Status callbacks that arrived before dispatch stored their message's provider id (a provider may answer
# the send call and post the receipt at once). Kept until dispatch records that id and applies them in the
# same transaction (services/receipts.py); an opt-out among them is recorded from the receipt's own
# numbers when it arrives, whether or not the message ever matches.
pending_receipts = Table(
    "pending_receipts",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("provider", String(20), nullable=False),
    Column("provider_message_id", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    Column("error_code", String(50)),
    Column("error_message", Text),
    Column("opted_out", Boolean, nullable=False, default=False),
    Column("recipient", String(20)),  # the number the message went to, as the receipt gives it
    Column("sender", String(20)),  # the number (or short code / alphanumeric id) it came from
    Column("consent_event_id", BigId, ForeignKey("consent_events.id")),  # the opt-out recorded on arrival
    Column("received_at", UtcDateTime, nullable=False),
    # Providers post a callback at least once: a repeat of the same state is the same receipt.
    UniqueConstraint("provider", "provider_message_id", "status", name="uq_pending_receipts_receipt"),
)

inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("provider", String(20), nullable=False),
    Column("provider_message_id", String(100), nullable=False),
    Column("from_phone", String(20), nullable=False),
    Column("to_phone", String(20), nullable=False),
    Column("body", Text, nullable=False),
    Column("contact_id", BigId, ForeignKey("contacts.id")),
    Column("program_id", BigId, ForeignKey("programs.id")),
    Column("intent", String(20), nullable=False),
    Column("confidence", String(10)),
    Column("language", String(5)),
    Column("reason", String(200)),
    Column("review", Boolean, nullable=False, default=False),
    Column("review_decided_at", UtcDateTime),
    Column("consent_event_id", BigId, ForeignKey("consent_events.id")),
    Column("attributed_campaign_id", BigId, ForeignKey("campaigns.id")),
    Column("received_at", UtcDateTime, nullable=False),
    UniqueConstraint("provider", "provider_message_id", name="uq_inbound_provider_id"),
    Index("ix_inbound_contact_time", "contact_id", "received_at"),
    Index("ix_inbound_review", "review", "review_decided_at"),
    # A campaign's page: replies by intent and the latest replies, without reading every inbound message.
    Index("ix_inbound_campaign_time", "attributed_campaign_id", "received_at"),
)

# The local SMS simulator's phone network: what optline "sent" and what "contacts" replied.
simulator_messages = Table(
    "simulator_messages",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("direction", String(3), nullable=False),  # out: optline -> person; in: person -> optline
    Column("sid", String(40), nullable=False, unique=True),
    Column("from_phone", String(20), nullable=False),
    Column("to_phone", String(20), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("direction in ('out', 'in')", name="direction"),
)

# Imported Do-Not-Call numbers (national or internal list). Marketing skips them unless the contact's
# consent is express written consent (services.audience.express_written_consent).
dnc_numbers = Table(
    "dnc_numbers",
    metadata,
    Column("phone", String(20), primary_key=True),
    Column("source", String(100), nullable=False),
    Column("imported_at", UtcDateTime, nullable=False),
)

# --- Opt-out analytics (issue 6). Small aggregate tables: the report reads only these, never `messages`.

# Sent / delivered messages per (program, campaign, kind, UTC day). Maintained by database triggers on
# `messages` (migration 0003), so every code path that writes a message keeps them right. `campaign_id` 0
# means "no campaign" (a NULL cannot take part in the upsert's conflict key). `shard` is the writing
# backend's pid on PostgreSQL (0 on SQLite): concurrent workers never touch the same counter row, so the
# triggers add no lock contention and no deadlocks between dispatchers. Readers sum over shards.
message_counts = Table(
    "message_counts",
    metadata,
    Column("program_id", BigInteger, primary_key=True),
    Column("campaign_id", BigInteger, primary_key=True),
    Column("kind", String(20), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("sent", BigInteger, nullable=False, default=0),
    Column("delivered", BigInteger, nullable=False, default=0),
    # The dashboard's sent-in-30-days and its trend (services/dashboard.py) read the last days only.
    Index("ix_message_counts_day", "day"),
)

# The fatigue curve's denominator: messages sent per UTC day, by how many messages (this one included) the
# contact had been sent in the 30 days up to it. Kept by the same trigger when a message first counts as sent.
frequency_exposures = Table(
    "frequency_exposures",
    metadata,
    Column("program_id", BigInteger, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("messages_30d", Integer, primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("sent", BigInteger, nullable=False, default=0),
)

# One row per opt-out event, rolled up incrementally from the append-only ledger (services.analytics).
# Derived data, not evidence: it can be rebuilt from the ledger and the outbox at any time.
optout_attributions = Table(
    "optout_attributions",
    metadata,
    Column("event_id", BigInteger, primary_key=True),  # consent_events.id
    Column("contact_id", BigInteger, nullable=False),
    Column("program_id", BigInteger),  # the attributed campaign's program, else the event's (NULL: brand)
    Column("brand", String(100), nullable=False),
    Column("campaign_id", BigInteger),  # NULL: unattributed
    Column("message_id", BigInteger),
    Column("channel", String(20), nullable=False),  # keyword, free_text, web_link, provider, other
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("day", Date, nullable=False),
    Column("messages_30d", Integer, nullable=False),
    Index("ix_optout_attributions_day", "day"),
    Index("ix_optout_attributions_campaign", "campaign_id"),
)

# Opt-outs per (program, campaign, channel, UTC day, messages in the 30 days before): the rollup adds to it
# as it attributes new events, so the report never scans opt-out events either. 0 stands for NULL in
# program_id (a brand-wide opt-out nobody can be attributed to) and campaign_id (unattributed).
optout_counts = Table(
    "optout_counts",
    metadata,
    Column("program_id", BigInteger, primary_key=True),
    Column("brand", String(100), primary_key=True),
    Column("campaign_id", BigInteger, primary_key=True),
    Column("channel", String(20), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("messages_30d", Integer, primary_key=True),
    Column("optouts", BigInteger, nullable=False, default=0),
)

# --- Scrape-time counts (issue 17): /metrics reads these small tables, never a GROUP BY over the outbox or
# the ledger, so a scrape costs the same at 10M messages as at none. Kept by database triggers in the same
# transaction as every write (adapters/db/rollups.py, migration 0005). ``shard``: the writing backend's pid
# on PostgreSQL (0 on SQLite), so concurrent workers never update the same row; readers sum over shards and
# the worker's housekeeping folds them into shard 0.

# Messages by (status, provider, lane). ``provider`` '' stands for none yet (NULL cannot be in the key).
message_status_counts = Table(
    "message_status_counts",
    metadata,
    Column("status", String(20), primary_key=True),
    Column("provider", String(20), primary_key=True),
    Column("priority", SmallInteger, primary_key=True, autoincrement=False),
    Column("shard", Integer, primary_key=True, autoincrement=False),
    Column("messages", BigInteger, nullable=False, default=0),
)

# Consent events by (action, channel): the ledger is append-only, so these only grow. ``chains``: those of
# them that began a contact's chain (seq 1), so that a checkpoint's "events in chains" reads these rows
# instead of counting the whole ledger (adapters/db/ledger.py totals).
consent_event_counts = Table(
    "consent_event_counts",
    metadata,
    Column("action", String(20), primary_key=True),
    Column("channel", String(20), primary_key=True),
    Column("shard", Integer, primary_key=True, autoincrement=False),
    Column("events", BigInteger, nullable=False, default=0),
    Column("chains", BigInteger, nullable=False, default=0, server_default=text("0")),
)

# Messages per (campaign, status): the dashboard's campaign list (services/dashboard.py campaigns_summary)
# reads these rows, not a GROUP BY over every campaign message ever sent. Kept by the same triggers as
# ``message_status_counts`` (adapters/db/rollups.py, migration 0006), sharded the same way.
campaign_status_counts = Table(
    "campaign_status_counts",
    metadata,
    Column("campaign_id", BigInteger, primary_key=True, autoincrement=False),
    Column("status", String(20), primary_key=True),
    Column("shard", Integer, primary_key=True, autoincrement=False),
    Column("messages", BigInteger, nullable=False, default=0),
)

# Jobs that one process at a time should run (adapters/db/leases.py): the holder and until when it holds.
# A holder that dies simply lets its lease run out; the next process to ask takes it over.
leases = Table(
    "leases",
    metadata,
    Column("name", String(50), primary_key=True),
    Column("holder", String(100), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

# Small named values for incremental jobs (the opt-out rollup's ledger watermark).
analytics_state = Table(
    "analytics_state",
    metadata,
    Column("name", String(50), primary_key=True),
    Column("value", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# --- List review (issue 6)

# Numbers the FCC Reassigned Numbers Database reports as permanently disconnected (then reassignable).
reassigned_numbers = Table(
    "reassigned_numbers",
    metadata,
    Column("phone", String(20), primary_key=True),
    Column("disconnected_at", UtcDateTime, primary_key=True),
    Column("source", String(200), nullable=False),
    Column("imported_at", UtcDateTime, nullable=False),
)

audit_runs = Table(
    "audit_runs",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("trigger", String(20), nullable=False),  # cli, schedule, api
    Column("program_id", BigId, ForeignKey("programs.id")),  # NULL: every program
    Column("fix", Boolean, nullable=False, default=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("findings", Integer, nullable=False, default=0),
    Column("fixed", Integer, nullable=False, default=0),
    Column("summary", JSON, nullable=False, default=dict),  # reason -> count
    Index("ix_audit_runs_started", "started_at"),
)

audit_findings = Table(
    "audit_findings",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("run_id", BigId, ForeignKey("audit_runs.id"), nullable=False),
    Column("reason", String(40), nullable=False),
    Column("contact_id", BigId, ForeignKey("contacts.id")),
    Column("phone", String(40)),
    Column("program_id", BigId, ForeignKey("programs.id")),
    Column("detail", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("proof", JSON, nullable=False, default=dict),
    Column("fixed", String(200)),  # what --fix did (the ledger event id, the cancelled message), or NULL
    Index("ix_audit_findings_run", "run_id", "reason"),
)

# Each contacts import (services/imports.py), from the dashboard or the CLI, so that its results page can be
# opened after the upload, by any process. ``status``: running, done, interrupted (the database failed while
# merging: ``error`` says which lines are imported), refused (the file as a whole: nothing was imported).
imports = Table(
    "imports",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("program_id", BigId, ForeignKey("programs.id"), nullable=False),
    Column("file_name", String(255), nullable=False),
    Column("source", String(20), nullable=False),  # dashboard, cli
    Column("imported_by", String(100), nullable=False),  # the operator (dashboard) or the system user (cli)
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("status", String(20), nullable=False),
    Column("error", Text),
    Column("encoding", String(60)),
    Column("columns", JSON, nullable=False, default=list),  # the header as the importer read it (normalised)
    Column("counts", JSON, nullable=False, default=dict),  # ImportSummary's counters: rows, created, …
    Column("reject_reasons", JSON, nullable=False, default=dict),  # reason -> count
    Column("held_reasons", JSON, nullable=False, default=dict),
    Column("notes", JSON, nullable=False, default=list),  # ImportSummary.notes: neither counts nor rejects
    # Set when the retention purge (services/retention.py) deleted this import's rows in import_rejects; the
    # counts and reasons above stay.
    Column("rejects_purged_at", UtcDateTime),
    Index("ix_imports_started", "started_at"),
)

# Every row of an import that was not imported (or imported without its consent: ``held``), with its line,
# reason and the fields as read, inserted in bulk while the file is read; all of them, however many.
import_rejects = Table(
    "import_rejects",
    metadata,
    Column("import_id", BigId, ForeignKey("imports.id"), primary_key=True),
    Column("line", Integer, primary_key=True, autoincrement=False),
    Column("reason", Text, nullable=False),
    Column("held", Boolean, nullable=False, default=False),
    Column("fields", JSON, nullable=False),
)

# Dashboard operators (issue 5). Passwords are argon2id hashes; ``must_change_password`` marks the one-time
# password printed on first run, which has to be replaced at first login.
users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("username", String(100), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("must_change_password", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_login_at", UtcDateTime),
    Column("disabled_at", UtcDateTime),  # set: the user cannot sign in and their sessions are ended
)

# Dashboard sign-ins (issue 12). The session cookie carries a random token; this row is what makes it valid.
# Signing out deletes the row and a password change deletes every row of the user, so a copied cookie stops
# working at once (a signed cookie alone would stay valid until it expired). Only a hash of the token is
# stored: a copy of the database opens no session.
user_sessions = Table(
    "user_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Index("ix_user_sessions_user", "user_id"),
)

# Secrets the installation generates for itself (issue 12): ``secret_key`` signs sessions, CSRF tokens and
# simulator webhooks when OPTLINE_SECRET_KEY is unset (outside production). A row rather than a file beside
# the database: every process and machine sharing a PostgreSQL database must sign with the same key, and for
# SQLite the database file already is the installation.
installation_secrets = Table(
    "installation_secrets",
    metadata,
    Column("name", String(50), primary_key=True),
    Column("value", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)


# --- consent capture (sign-ups) ---------------------------------------------------------------------------

# What a program's sign-up disclosure said, version by version. Never edited: a change is a new version, so
# every opt-in's evidence can name the exact text the person saw.
disclosure_versions = Table(
    "disclosure_versions",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("program_id", BigId, ForeignKey("programs.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("text", Text, nullable=False),
    # False: composed from the program's settings (a new version follows when they change); True: written
    # by an operator (`optline programs disclosure NAME --text …`).
    Column("custom", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("program_id", "version", name="uq_disclosure_versions_program_version"),
)

# Double opt-ins in flight: the first step was recorded (an opt_in event, status pending) and a prompt
# sent; the person's explicit yes within the window confirms, otherwise the sign-up expires. The ledger
# holds the evidence; this table is the workflow that links the two steps.
signups = Table(
    "signups",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("contact_id", BigId, ForeignKey("contacts.id"), nullable=False),
    Column("program_id", BigId, ForeignKey("programs.id"), nullable=False),
    Column("channel", String(20), nullable=False),  # sms_keyword, web, api
    Column("status", String(20), nullable=False),
    Column("disclosure_version_id", BigId, ForeignKey("disclosure_versions.id"), nullable=False),
    Column("evidence", JSON, nullable=False, default=dict),  # the first step, as recorded in the ledger
    Column("client_ip", String(45)),  # web/API sign-ups: for the per-IP limit across processes
    Column("prompt_message_id", BigId, ForeignKey("messages.id")),
    Column("opt_in_event_id", BigId, ForeignKey("consent_events.id")),
    Column("confirm_event_id", BigId, ForeignKey("consent_events.id")),
    Column("started_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("confirmed_at", UtcDateTime),
    Column("expired_at", UtcDateTime),
    Column("cancelled_at", UtcDateTime),
    Column("cancel_reason", String(200)),
    CheckConstraint("status in ('pending', 'confirmed', 'expired', 'cancelled')", name="status"),
    Index("ix_signups_contact_program_status", "contact_id", "program_id", "status"),
    Index("ix_signups_status_expires", "status", "expires_at"),
    Index("ix_signups_client_ip_time", "client_ip", "started_at"),
)


# --- outbound event webhooks (issue 17) -------------------------------------------------------------------

# Where an operator wants events pushed (a CRM, a data warehouse …). ``secret`` signs each delivery
# (Standard Webhooks); it is shown once at creation and kept because signing needs the key itself: encrypted,
# ``v1:`` + a Fernet token under a key derived from OPTLINE_SECRET_KEY (adapters/secret_box.py; a value
# without the prefix is clear text from before, encrypted by `optline secrets rotate`).
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("url", String(500), nullable=False),
    Column("description", String(200), nullable=False, default=""),
    Column("secret", String(500), nullable=False),
    Column("events", JSON, nullable=False, default=list),  # domain.event_hooks.EVENT_TYPES chosen
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("disabled_at", UtcDateTime),
)

# The outbox of events: one row per (event, endpoint), written in the same transaction as the change that
# caused the event, so a committed change always has its delivery and a rolled-back one never does.
# ``body`` is the exact JSON that is signed and sent, the same bytes on every attempt and replay.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("endpoint_id", BigId, ForeignKey("webhook_endpoints.id"), nullable=False),
    Column("message_id", String(40), nullable=False, unique=True),  # the webhook-id header
    Column("event_type", String(30), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(20), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    # Due time; a deliverer that claims the row moves it past its own HTTP timeout (a lease), so a crashed
    # deliverer's claim simply falls due again.
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("retry_until", UtcDateTime, nullable=False),  # a day after the event (or after a replay)
    Column("replay", Boolean, nullable=False, default=False),  # attempts now are an operator's replay
    Column("last_status_code", Integer),
    Column("created_at", UtcDateTime, nullable=False),
    Column("delivered_at", UtcDateTime),
    CheckConstraint("status in ('pending', 'delivered', 'failed')", name="status"),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
)

# Every attempt to deliver, kept for the dashboard: what the endpoint answered and how long it took.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("delivery_id", BigId, ForeignKey("webhook_deliveries.id"), nullable=False),
    Column("attempted_at", UtcDateTime, nullable=False),
    Column("status_code", Integer),  # NULL: no HTTP answer (refused, timed out)
    Column("duration_ms", Integer, nullable=False),
    Column("response_snippet", Text, nullable=False, default=""),
    Column("error", String(300)),
    Column("replay", Boolean, nullable=False, default=False),
    Index("ix_webhook_attempts_delivery", "delivery_id", "id"),
)

# Requests counted by the pages' rate limits (entrypoints/web/security.py RateLimiter), in the database so
# that every API process shares one window per client. ``at`` is seconds since the epoch; a row is useless
# once ``at`` + the window has passed and is deleted by the next hit of its key (or the periodic sweep).
rate_limit_hits = Table(
    "rate_limit_hits",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("bucket", String(40), nullable=False),  # which limit: login, optout, join
    Column("key", String(100), nullable=False),  # the client (IP address)
    Column("at", Float, nullable=False),
    Column("expires", Float, nullable=False),
    Index("ix_rate_limit_hits_key", "bucket", "key", "at"),
    Index("ix_rate_limit_hits_expires", "expires"),
)

# Per-sender rate limits shared by every worker process (services/sender_limits.py): a virtual-scheduling
# token bucket (GCRA). ``next_free`` is the earliest wall-clock time (epoch seconds) the next message from
# this sender may start; a worker reserves a run of slots by moving it forward under the row lock, so N
# workers together never exceed the sender's rate. ``paused_until``: the provider asked us to back off
# (429 / queue full with Retry-After); no slot is handed out before it.
sender_limits = Table(
    "sender_limits",
    metadata,
    Column("sender", String(40), primary_key=True),
    Column("next_free", Float, nullable=False, default=0.0),
    Column("paused_until", Float, nullable=False, default=0.0),
    Column("pause_reason", String(300)),
)
