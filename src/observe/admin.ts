/**
 * The admin HTTP server (HTTP/1.1, node:http): Prometheus scrape, a JSON status page, a liveness probe.
 *
 *   GET /metrics  registry.metrics(), with the registry's content type (Prometheus text or OpenMetrics)
 *   GET /status   JSON.stringify(await status(), null, 2) as application/json
 *   GET /healthz  "ok"
 *
 * HEAD is answered like GET without a body (HTTP requires both); other methods get 405 with `Allow`,
 * other paths 404 with the list of endpoints. Whatever status() or the registry throws becomes a 500
 * carrying the message; nothing a request does can take the process down. No authentication: bind it to
 * loopback or a private interface.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry, RegistryContentType } from "prom-client";
import { formatAddress } from "../core/endpoint.ts";
import type { Logger } from "./log.ts";

export interface AdminServerOptions {
  host: string;
  /** 0 picks a free port (see the returned `port`). */
  port: number;
  metrics: { readonly registry: Registry<RegistryContentType> };
  /** Called per GET /status; may return a promise. Must be JSON-serialisable. */
  status: () => unknown;
  log?: Logger;
}

export interface AdminServer {
  /** "127.0.0.1:9901" or "[::1]:9901". */
  readonly address: string;
  readonly port: number;
  /** Stop accepting, let requests in progress finish (at most 2 s), then resolve. Idempotent. */
  close(): Promise<void>;
}

const ENDPOINTS = ["/metrics", "/status", "/healthz"] as const;
const CLOSE_GRACE_MS = 2_000;

export async function startAdminServer(options: AdminServerOptions): Promise<AdminServer> {
  const { metrics, status, log } = options;

  const server = http.createServer((req, res) => {
    handle(req, res, metrics.registry, status).catch((err: unknown) => {
      // handle() answers its own errors; this is the last resort (e.g. writing to a destroyed socket).
      log?.error({ err, url: req.url }, "admin request failed");
      if (!res.headersSent) send(res, 500, "text/plain; charset=utf-8", "internal error\n");
      else res.destroy();
    });
  });
  // Scrapes are small and quick; keep a slow or stuck client from holding a socket for minutes.
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) =>
      reject(new Error(`admin server cannot listen on ${options.host}:${options.port}: ${err.message}`));
    server.once("error", onError);
    server.listen(options.port, options.host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  server.on("error", (err) => log?.error({ err }, "admin server error"));

  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    address: formatAddress({ kind: "tcp", host: options.host, port }),
    port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        // Keep-alive sockets with no request in progress would otherwise hold close() up.
        server.closeIdleConnections();
      });
      return closing;
    },
  };

  async function handle(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    registry: Registry<RegistryContentType>,
    getStatus: () => unknown,
  ): Promise<void> {
    const url = req.url ?? "/";
    const query = url.indexOf("?");
    const path = query < 0 ? url : url.slice(0, query);
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("allow", "GET, HEAD");
      send(res, 405, "text/plain; charset=utf-8", `method ${req.method} not allowed; use GET\n`);
      return;
    }
    try {
      switch (path) {
        case "/metrics":
          send(res, 200, registry.contentType, await registry.metrics());
          return;
        case "/status": {
          const body = JSON.stringify(await getStatus(), null, 2) ?? "null";
          send(res, 200, "application/json; charset=utf-8", `${body}\n`);
          return;
        }
        case "/healthz":
          send(res, 200, "text/plain; charset=utf-8", "ok\n");
          return;
        default:
          send(
            res,
            404,
            "text/plain; charset=utf-8",
            `not found: ${path.slice(0, 200)}\nendpoints: ${ENDPOINTS.join(" ")}\n`,
          );
      }
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      log?.error({ err, path }, "admin endpoint failed");
      send(res, 500, "text/plain; charset=utf-8", `${path} failed: ${message}\n`);
    }
  }
}

function send(res: http.ServerResponse, code: number, contentType: string, body: string): void {
  res.writeHead(code, {
    "content-type": contentType,
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
  });
  // node:http drops the body of a HEAD response by itself and keeps content-length.
  res.end(body);
}
