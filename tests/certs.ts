/** Test certificates made with openssl: a CA and a leaf it signed. */
import assert from "node:assert/strict";
import { PEERS } from "./peers.ts";
import { run } from "./run_cmd.ts";

const OPENSSL = PEERS.openssl.bin;

/** A test CA and a leaf for "localhost" signed by it (rustls refuses a self-signed CA:TRUE leaf). */
export async function makeCerts(dir: string, cn = "localhost"): Promise<void> {
  const sh = async (...args: string[]) => {
    const r = await run([OPENSSL, ...args]);
    assert.equal(r.code, 0, r.out);
  };
  await sh(
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    `${dir}/ca.key`,
    "-out",
    `${dir}/ca.pem`,
    "-days",
    "2",
    "-subj",
    "/CN=skiff test CA",
  );
  await sh(
    "req",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    `${dir}/key.pem`,
    "-out",
    `${dir}/leaf.csr`,
    "-subj",
    `/CN=${cn}`,
  );
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    `subjectAltName=DNS:${cn}\nbasicConstraints=CA:FALSE\n`,
  );
  await sh(
    "x509",
    "-req",
    "-in",
    `${dir}/leaf.csr`,
    "-CA",
    `${dir}/ca.pem`,
    "-CAkey",
    `${dir}/ca.key`,
    "-CAcreateserial",
    "-out",
    `${dir}/cert.pem`,
    "-days",
    "2",
    "-extfile",
    `${dir}/ext.cnf`,
  );
}
