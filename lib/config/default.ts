/**
 * The embedded default configuration: what skiff runs with when no config
 * file is given, and the base every config file is merged over (a file only
 * needs the keys it changes). It needs no root and no setup: everything lives
 * under ./var and the listener is on loopback. conf/skiff.toml documents each
 * key; keep the two in step (tests/config_test.ts checks they agree).
 */

/** The default configuration as TOML text; every key skiff knows appears here. */
export const DEFAULT_CONFIG_TOML: string = `# skiff embedded default configuration
hostname = "localhost"
spool_dir = "./var/spool"
relay_networks = ["127.0.0.0/8", "::1/128"]
user = ""
group = ""

[[listener]]
address = "127.0.0.1:2525"
mode = "0666"
owner = ""
protocol = "smtp"
tls = "none"
tls_cert = ""
tls_key = ""
auth = "none"
auth_plaintext = false
require_auth = false
senders = "own"
destination = "router"
milters = []
dmarc = "enforce"
spf_fail = "header"

[[listener]]
address = "unix:./var/run/submit.sock"
mode = "0666"
protocol = "smtp"
auth = "peercred"

[auth]
credentials = ""
trusted_users = []
max_failures = 5
failure_window = 300
concurrent_checks = 4

[limits]
message_size = 10485760
command_line_length = 512
recipients = 100
command_timeout = 300
data_timeout = 600
errors = 10
connections = 100
connections_per_ip = 20
session_timeout = 1800
unknown_commands = 5
unauthenticated_commands = 20
greet_pause = 0
output_buffer = 262144

[queue]
retry_min = 300
retry_max = 14400
lifetime = 432000
worker_timeout = 60
workers = 4
scan_interval = 60
relay_concurrency = 10
min_free_bytes = 16777216
spool_sync = "syncfs"

[relay]
relayhost = ""
connect_timeout = 30
reply_timeout = 300

[local]
domains = ["localhost"]
maildir_root = "./var/mail"
verify_recipients = true
existing_maildirs_only = false

[log]
format = "text"
level = "info"
file = ""

[milter]
default_action = "tempfail"
connect_timeout = 30
command_timeout = 30
content_timeout = 300

[sendmail]
maildrop_dir = "./var/maildrop"
untrusted_sender = "refuse"

[mailauth]
authserv_id = ""
quarantine = "header"
dns_timeout = 20
max_lookups = 50
min_key_bits = 1024

[delivery]
delay_warning = 0
max_received = 50
nameserver = ""
dns_timeout = 10
aliases = ""
forward = false
cache_size = 20
cache_idle = 30
concurrency = 10
rate = 0
tls = "may"
tls_ca_file = ""
mta_sts = "on"
mta_sts_ca_file = ""
dane = "on"
tls_rpt = "off"
tls_rpt_dir = ""
auth_user = ""
auth_password = ""
local_mailbox = "maildir"
mbox_dir = "./var/mail"
local_users = false
default_privs = "nobody"

[http]
address = ""
allow_remote = false
token = ""
token_file = ""
`;
