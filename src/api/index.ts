/** The control API: REST/JSON with tokens and scopes, Server-Sent Events, metrics and the dashboard. */
export { buildApi, startApi, migrationView, type ApiOptions, type StartedApi } from './server.js';
export { generateToken, TokenVerifier, type ApiToken, type Scope } from './auth.js';
export { EventHub, sseMessage, type SseOptions } from './sse.js';
export { apiOptionsFromConfig, apiConfigSchema, type ApiConfig } from './config.js';
