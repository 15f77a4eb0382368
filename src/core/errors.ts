/**
 * A configuration error that names the field at fault, e.g. `policy.choiceCount: must be between 2 and 10`.
 * Every config and flag parser in Roster throws this, so the CLI can print one clear line.
 */
export class ConfigError extends Error {
  readonly field: string;
  /** The message without the field name. */
  readonly detail: string;
  constructor(field: string, detail: string) {
    super(field ? `${field}: ${detail}` : detail);
    this.name = "ConfigError";
    this.field = field;
    this.detail = detail;
  }
}
