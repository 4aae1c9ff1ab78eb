// The GUI API's repository calls (fl-api src/api/repository_API.js, unchanged) against the repository
// at FL_REPOSITORY_URL, then what fl-ui does with the answers (modelsList.vue, tableComponent.vue:
// `filename.split('/')`, `training_id`, `b64toBlob`). One line per call: PASS|FAIL fl-api: call: detail.
import {
  modelsList, getAvailableModels, downloadModelFile, modelShell, strategiesList, trainingResultsList,
} from './src/api/repository_API.js';

let failures = 0;
async function check(call, run) {
  try {
    console.log(`PASS fl-api: ${call}: ${await run()}`);
  } catch (error) {
    failures += 1;
    const status = error.response ? ` (HTTP ${error.response.status})` : '';
    console.log(`FAIL fl-api: ${call}: ${error.message}${status}`);
  }
}

const expectedWeights = process.env.EXPECTED_WEIGHTS_BASE64;
await check('modelsList', async () => (await modelsList()).map((m) => m.model_name).sort().join(','));
let weights = [];
await check('getAvailableModels + fl-ui trained-model list', async () => {
  const files = await getAvailableModels();
  weights = files.filter((item) => item.filename.split('/')[0] === 'weights');
  if (!weights.length) throw new Error(`no weights among ${files.map((f) => f.filename).join(', ')}`);
  return weights.map((w) => `${w.filename} training_id=${w.training_id}`).join('; ');
});
await check('downloadModelFile + fl-ui b64toBlob', async () => {
  const [model_name, model_version] = weights[0].filename.split('/').slice(1, 3);
  const body = await downloadModelFile({ model_name, model_version, training_id: weights[0].training_id });
  const bytes = Buffer.from(body, 'base64');
  if (expectedWeights && bytes.toString('base64') !== expectedWeights) throw new Error('the decoded weights differ');
  return `${bytes.length} bytes after base64 decoding`;
});
await check('strategiesList', async () => (await strategiesList()).map((s) => s.strategy_name).join(','));
await check('trainingResultsList', async () => (await trainingResultsList()).map((r) => r.training_id).join(','));
await check('modelShell (three path segments, as fl-ui calls it)', async () => JSON.stringify(await modelShell('migration_predictor', 'v1', '1')));
process.exitCode = failures ? 1 : 0;
