/** skiff's version, printed by `skiff version` and in the SMTP greeting's Received header. */
export const VERSION = "0.1.0";
