// Calls to the flrepo API from the console: the key entered once per browser session lives in
// sessionStorage (never a cookie) and goes out as the API's X-API-Key header on every fetch.

const KEY = "flrepo.apiKey";

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
  }
}

export function storedKey() {
  return sessionStorage.getItem(KEY);
}

export function rememberKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY);
}

function headers(extra) {
  const out = { Accept: "application/json", ...(extra || {}) };
  const key = storedKey();
  if (key) out["X-API-Key"] = key;
  return out;
}

async function failure(response) {
  let detail = response.statusText;
  try {
    detail = (await response.json()).detail ?? detail;
  } catch (_) {
    // not JSON: keep the status text
  }
  return new ApiError(response.status, detail);
}

// GET a JSON resource: {data, total} (total from X-Total-Count when the API pages the list).
export async function get(path, params) {
  const query = params ? "?" + new URLSearchParams(params).toString() : "";
  const response = await fetch(path + query, { headers: headers(), credentials: "omit", cache: "no-store" });
  if (!response.ok) throw await failure(response);
  const total = response.headers.get("X-Total-Count");
  return { data: await response.json(), total: total === null ? null : Number(total) };
}

export async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(body ?? {}),
    credentials: "omit",
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

// A file download that needs the key: fetched with the header, handed to the browser as a blob.
export async function download(path, filename) {
  const response = await fetch(path, { headers: headers({ Accept: "*/*" }), credentials: "omit" });
  if (!response.ok) throw await failure(response);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

export const ROLES = { none: 0, reader: 1, writer: 2, admin: 3 };

export async function whoami() {
  return (await get("/whoami")).data;
}

export function enc(part) {
  return encodeURIComponent(part);
}
