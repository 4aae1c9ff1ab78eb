// tus-js-client, unchanged, against flrepo's /uploads: the upload is aborted after its first part and
// resumed by a second Upload from the URL the first one got. Prints the URL and "done".
// node resume.js BASE_URL FILE TARGET
const tus = require("tus-js-client");
const fs = require("fs");

const [base, file, target] = process.argv.slice(2);
const data = fs.readFileSync(file);
const PART = 4 * 1024 * 1024;

function upload(resumeFrom) {
  return new Promise((resolve, reject) => {
    let aborted = false;
    const up = new tus.Upload(data, {
      endpoint: `${base}/uploads`,
      uploadUrl: resumeFrom,
      chunkSize: PART,
      retryDelays: null,
      metadata: { target: target, filename: "model.bin" },
      onProgress: (sent) => {
        if (resumeFrom === null && !aborted && sent >= PART) {
          aborted = true;
          up.abort().then(() => resolve(up.url));
        }
      },
      onSuccess: () => resolve("done"),
      onError: reject,
    });
    up.start();
  });
}

(async () => {
  const url = await upload(null);
  console.log(`interrupted ${url}`);
  console.log(await upload(url));
})().catch((error) => {
  console.error(`error ${error.message}`);
  process.exit(1);
});
