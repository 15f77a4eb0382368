/**
 * A configuration error that names the field at fault, e.g. `policy.choiceCount: must be between 2 and 10`.
 * Every config and flag parser in Roster throws this, so the CLI can print one clear line.
 */
export class ConfigError extends Error {
  readonly field: string;
  constructor(field: string, message: string) {
    super(field ? `${field}: ${message}` : message);
    this.name = "ConfigError";
    this.field = field;
  }
}
