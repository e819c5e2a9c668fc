"""Environment variable names and defaults: the one place users script against."""

from __future__ import annotations

ITWIN_API_URL_ENV = "RELAY_ITWIN_API_URL"
APS_API_URL_ENV = "RELAY_APS_API_URL"
ITWIN_SECRET_ID_ENV = "RELAY_ITWIN_SECRET_ID"
APS_SECRET_ID_ENV = "RELAY_APS_SECRET_ID"
ALLOWED_UPLOAD_HOSTS_ENV = "RELAY_ALLOWED_UPLOAD_HOSTS"
MAX_UPLOAD_BYTES_ENV = "RELAY_MAX_UPLOAD_BYTES"
IDEMPOTENCY_TABLE_ENV = "RELAY_IDEMPOTENCY_TABLE"
TRANSFERS_TABLE_ENV = "RELAY_TRANSFERS_TABLE"
HTTP_CONNECT_TIMEOUT_ENV = "RELAY_HTTP_CONNECT_TIMEOUT"
HTTP_READ_TIMEOUT_ENV = "RELAY_HTTP_READ_TIMEOUT"
MAX_ATTEMPTS_ENV = "RELAY_MAX_ATTEMPTS"
SECRET_MAX_AGE_ENV = "RELAY_SECRET_MAX_AGE"
MAX_RECEIVE_COUNT_ENV = "RELAY_MAX_RECEIVE_COUNT"

DEFAULT_ITWIN_API_URL = "https://api.bentley.com"
DEFAULT_APS_API_URL = "https://developer.api.autodesk.com"
DEFAULT_ITWIN_TOKEN_URL = "https://ims.bentley.com/connect/token"
DEFAULT_APS_TOKEN_URL = "https://developer.api.autodesk.com/authentication/v2/token"
DEFAULT_ITWIN_SCOPE = "itwin-platform"
DEFAULT_APS_SCOPE = "data:read data:write data:create"
# Forms answer 413 RequestTooLarge above 30 MB; the Issues limit is undocumented, so the same default.
DEFAULT_MAX_UPLOAD_BYTES = 30 * 1024 * 1024
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_SECRET_MAX_AGE = 300

ITWIN_ACCEPT = "application/vnd.bentley.itwin-platform.v1+json"
SERVICE_NAME = "attachment-relay"
METRICS_NAMESPACE = "AttachmentRelay"
