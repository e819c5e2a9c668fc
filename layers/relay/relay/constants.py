"""Environment variable names and defaults: the one place users script against."""

from __future__ import annotations

ITWIN_API_URL_ENV = "RELAY_ITWIN_API_URL"
APS_API_URL_ENV = "RELAY_APS_API_URL"
ITWIN_SECRET_ID_ENV = "RELAY_ITWIN_SECRET_ID"  # nosec B105  # an environment variable's name, not a secret
APS_SECRET_ID_ENV = "RELAY_APS_SECRET_ID"  # nosec B105  # an environment variable's name, not a secret
ALLOWED_UPLOAD_HOSTS_ENV = "RELAY_ALLOWED_UPLOAD_HOSTS"
ALLOWED_TOKEN_HOSTS_ENV = "RELAY_ALLOWED_TOKEN_HOSTS"  # nosec B105  # an environment variable's name, not a secret
MAX_UPLOAD_BYTES_ENV = "RELAY_MAX_UPLOAD_BYTES"
IDEMPOTENCY_TABLE_ENV = "RELAY_IDEMPOTENCY_TABLE"
TRANSFERS_TABLE_ENV = "RELAY_TRANSFERS_TABLE"
HTTP_CONNECT_TIMEOUT_ENV = "RELAY_HTTP_CONNECT_TIMEOUT"
HTTP_READ_TIMEOUT_ENV = "RELAY_HTTP_READ_TIMEOUT"
MAX_ATTEMPTS_ENV = "RELAY_MAX_ATTEMPTS"
RETRY_BASE_DELAY_ENV = "RELAY_RETRY_BASE_DELAY"
RETRY_MAX_DELAY_ENV = "RELAY_RETRY_MAX_DELAY"
MAX_RETRY_AFTER_ENV = "RELAY_MAX_RETRY_AFTER"
SECRET_MAX_AGE_ENV = "RELAY_SECRET_MAX_AGE"  # nosec B105  # an environment variable's name, not a secret
MAX_RECEIVE_COUNT_ENV = "RELAY_MAX_RECEIVE_COUNT"
ARCHIVE_BUCKET_ENV = "RELAY_ARCHIVE_BUCKET"
ARCHIVE_QUEUE_URL_ENV = "RELAY_ARCHIVE_QUEUE_URL"
ARCHIVE_JOBS_TABLE_ENV = "RELAY_ARCHIVE_JOBS_TABLE"
ARCHIVE_PART_BYTES_ENV = "RELAY_ARCHIVE_PART_BYTES"
ARCHIVE_JOB_STALE_SECONDS_ENV = "RELAY_ARCHIVE_JOB_STALE_SECONDS"
PRESIGN_EXPIRY_SECONDS_ENV = "RELAY_PRESIGN_EXPIRY_SECONDS"
API_COPY_SECONDS_ENV = "RELAY_API_COPY_SECONDS"
WEBHOOK_SECRET_ID_ENV = "RELAY_WEBHOOK_SECRET_ID"  # nosec B105  # an environment variable's name, not a secret
WEBHOOK_DELIVERIES_TABLE_ENV = "RELAY_WEBHOOK_DELIVERIES_TABLE"
WEBHOOK_MAX_BODY_BYTES_ENV = "RELAY_WEBHOOK_MAX_BODY_BYTES"
WEBHOOK_DEDUPE_SECONDS_ENV = "RELAY_WEBHOOK_DEDUPE_SECONDS"
TOKEN_LEASE_TABLE_ENV = "RELAY_TOKEN_LEASE_TABLE"  # nosec B105  # an environment variable's name, not a secret
APS_REFRESH_MARGIN_MINUTES_ENV = "RELAY_APS_REFRESH_MARGIN_MINUTES"
APS_REFRESH_TOKEN_WARN_DAYS_ENV = "RELAY_APS_REFRESH_TOKEN_WARN_DAYS"  # nosec B105  # an environment variable's name, not a secret
APS_HUB_ID_ENV = "RELAY_APS_HUB_ID"
APS_FOLDER_ENV = "RELAY_APS_FOLDER"
APS_MAX_UPLOAD_BYTES_ENV = "RELAY_APS_MAX_UPLOAD_BYTES"
APS_PART_BYTES_ENV = "RELAY_APS_PART_BYTES"
APS_PART_CONCURRENCY_ENV = "RELAY_APS_PART_CONCURRENCY"

DEFAULT_ITWIN_API_URL = "https://api.bentley.com"
DEFAULT_APS_API_URL = "https://developer.api.autodesk.com"
DEFAULT_ITWIN_TOKEN_URL = "https://ims.bentley.com/connect/token"  # nosec B105  # the vendor's public token endpoint
DEFAULT_APS_TOKEN_URL = "https://developer.api.autodesk.com/authentication/v2/token"  # nosec B105  # the vendor's public token endpoint
DEFAULT_ITWIN_SCOPE = "itwin-platform"
DEFAULT_APS_SCOPE = "data:read data:write data:create"
# Forms answer 413 RequestTooLarge above 30 MB; the Issues limit is undocumented, so the same default.
DEFAULT_MAX_UPLOAD_BYTES = 30 * 1024 * 1024
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_RETRY_BASE_DELAY = 0.5
DEFAULT_RETRY_MAX_DELAY = 20.0
# A retry-after longer than this is not waited out inside an invocation: the message goes back to the queue.
DEFAULT_MAX_RETRY_AFTER = 60.0
DEFAULT_SECRET_MAX_AGE = 300
# Archived copies live under this prefix, which no bucket notification names: the relay never triggers itself.
ARCHIVE_PREFIX = "archive/"
# Large copies stream here first, so the final key is written once, whole, with its sha256 in the metadata.
STAGING_PREFIX = "staging/"
# S3's smallest multipart part (except the last) is 5 MiB; a copy holds about three parts in memory.
MIN_ARCHIVE_PART_BYTES = 5 * 1024 * 1024
DEFAULT_ARCHIVE_PART_BYTES = 8 * 1024 * 1024
DEFAULT_ARCHIVE_JOB_STALE_SECONDS = 3600
DEFAULT_PRESIGN_EXPIRY_SECONDS = 900
# API Gateway waits 29 s: /file copies inline for at most this long, then hands the copy to the archive queue.
DEFAULT_API_COPY_SECONDS = 20.0
# A webhook body above this is answered 413 before it is hashed (iTwin's events are a few hundred bytes).
DEFAULT_WEBHOOK_MAX_BODY_BYTES = 256 * 1024
# How long a delivery's messageId is remembered: far past iTwin's resends.
DEFAULT_WEBHOOK_DEDUPE_SECONDS = 7 * 24 * 3600
# APS user tokens: access tokens last 60 min, refresh tokens 15 days and work once.
DEFAULT_APS_AUTHORIZE_PATH = "/authentication/v2/authorize"
DEFAULT_APS_USERINFO_URL = "https://api.userprofile.autodesk.com/userinfo"
DEFAULT_APS_REDIRECT_URI = "http://localhost:8765/callback"
DEFAULT_APS_LOGIN_TIMEOUT = 300.0
DEFAULT_APS_REFRESH_MARGIN_MINUTES = 20.0
DEFAULT_APS_REFRESH_TOKEN_WARN_DAYS = 13.0
# Longer than the refresher's Timeout, so a run that is still going is never joined by a second one.
TOKEN_LEASE_SECONDS = 120.0
# S3 → RFI: the Document Management folder (a top folder's name, or a folder id) and the upload's limits.
DEFAULT_APS_FOLDER = "Project Files"
DEFAULT_APS_MAX_UPLOAD_BYTES = 5 * 1024 * 1024 * 1024
# signeds3upload: every part but the last is at least 5 MB; 25 URLs per call.
MIN_APS_PART_BYTES = 5 * 1024 * 1024
DEFAULT_APS_PART_BYTES = 8 * 1024 * 1024
DEFAULT_APS_PART_CONCURRENCY = 4
