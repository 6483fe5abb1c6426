/** Parsers for command-line option values, with errors that say what was expected. */
import { InvalidArgumentError } from 'commander';

export function number(min: number, max = Infinity) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < min || n > max) {
      throw new InvalidArgumentError(
        `expected a number from ${min}${max === Infinity ? ' up' : ` to ${max}`}, got "${value}"`,
      );
    }
    return n;
  };
}

export const share = number(0, 1);
export const positive = number(0.001);
export const millis = number(0);
export const port = (value: string): number => {
  const n = number(0, 65535)(value);
  if (!Number.isInteger(n)) throw new InvalidArgumentError(`expected a port number, got "${value}"`);
  return n;
};
