// A real parley server for the client's tests: spawned on a free loopback port with its
// own data directory, and tokens signed with its secret.

import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
// The project's test command builds the binary there; PARLEY_BIN points at another one.
const binary = process.env.PARLEY_BIN || path.join(root, 'target', 'debug', 'parley');
const STARTUP_TIMEOUT_MS = 20_000;

/** Start `parley serve`; resolves once it prints the address it listens on. */
export async function startServer() {
  if (!existsSync(binary)) {
    throw new Error(`${binary} is missing: run \`cargo build\` or set PARLEY_BIN`);
  }
  const dataDir = mkdtempSync(path.join(tmpdir(), 'parley-client-'));
  const secret = randomBytes(32).toString('hex');
  let running;
  try {
    running = await launch(dataDir, secret);
  } catch (e) {
    rmSync(dataDir, { recursive: true, force: true });
    throw e;
  }
  return {
    /** The WebSocket URL that signs `user` in, at the address the server has now. */
    url: (user) => `ws://${running.addr}/ws?token=${token(secret, user)}`,
    /** Stop the server, dropping every connection, and start it again on the same data
     * (on another port). */
    async restart() {
      await running.stop();
      running = await launch(dataDir, secret);
    },
    async stop() {
      await running.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

async function launch(dataDir, secret) {
  const child = spawn(binary, ['serve', '--listen', '127.0.0.1:0', '--data', dataDir, '--secret', secret], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill();
    await exited;
  };
  try {
    return { addr: await listeningAddress(child, () => stderr), stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

function listeningAddress(child, stderr) {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`parley did not start:\n${stderr()}`)), STARTUP_TIMEOUT_MS);
    child.stdout.setEncoding('utf8').on('data', (d) => {
      out += d;
      const m = out.match(/listening on (\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`parley exited with ${code}:\n${stderr()}`));
    });
  });
}

/** An HS256 JWT for `user`, valid for an hour (protocol/README.md, "Connecting"). */
export function token(secret, user) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub: user, iat: now, exp: now + 3600 })}`;
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}
