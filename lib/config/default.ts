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

[[listener]]
address = "127.0.0.1:2525"
protocol = "smtp"

[limits]
message_size = 10485760
command_line_length = 512
recipients = 100
command_timeout = 300
data_timeout = 600
errors = 10
connections = 100

[queue]
retry_min = 300
retry_max = 14400
lifetime = 432000
worker_timeout = 60
workers = 4
scan_interval = 60
relay_concurrency = 10

[relay]
relayhost = ""
connect_timeout = 30
reply_timeout = 300

[local]
domains = ["localhost"]
maildir_root = "./var/mail"

[log]
format = "text"
level = "info"
`;
