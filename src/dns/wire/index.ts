/** The DNS wire codec: pure functions, no I/O. */
export * from './types.js';
export {
  MAX_LABEL,
  MAX_NAME,
  PackOverflow,
  formatLabel,
  isSubdomainKey,
  labelCount,
  labelsToText,
  nameKey,
  nameWireLength,
  packName,
  parentName,
  parseName,
  splitName,
  textToLabels,
  unpackName,
  type Compressor,
} from './name.js';
export * from './text.js';
export * from './rdata.js';
export * from './message.js';
