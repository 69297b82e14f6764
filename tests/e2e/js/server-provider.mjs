// The OpenFeature server SDK for Node with its OFREP provider, evaluating Lab's flags as a Node
// service would. Driven by tests/e2e/test_e2e_openfeature.py.
//
//   node server-provider.mjs '{"baseUrl": ..., "clientKey": ..., "evaluations": [...]}'
//
// Each evaluation is {"flag", "default", "targetingKey"?, "attributes"?, "type"?} ("type" is
// "string", the default, or "boolean"). Prints one JSON object: {"results": the evaluation
// details in order, "responses": every HTTP answer the provider got}.
import { OFREPProvider } from '@openfeature/ofrep-provider';
import { OpenFeature } from '@openfeature/server-sdk';

const spec = JSON.parse(process.argv[2]);
// Every answer the provider got, for the test to validate against the OFREP schema.
const responses = [];
const fetchImplementation = async (request, init) => {
  const response = await fetch(request, init);
  const text = await response.clone().text();
  responses.push({
    url: request.url,
    status: response.status,
    contentType: response.headers.get('Content-Type'),
    body: text ? JSON.parse(text) : null,
  });
  return response;
};
const provider = new OFREPProvider({
  baseUrl: spec.baseUrl,
  headers: [['Authorization', `Bearer ${spec.clientKey}`]],
  fetchImplementation,
});
await OpenFeature.setProviderAndWait(provider);
const client = OpenFeature.getClient();

const results = [];
for (const evaluation of spec.evaluations) {
  const context =
    evaluation.targetingKey === undefined
      ? { ...evaluation.attributes }
      : { ...evaluation.attributes, targetingKey: evaluation.targetingKey };
  const details =
    evaluation.type === 'boolean'
      ? await client.getBooleanDetails(evaluation.flag, evaluation.default, context)
      : await client.getStringDetails(evaluation.flag, evaluation.default, context);
  results.push({
    flag: evaluation.flag,
    value: details.value,
    variant: details.variant ?? null,
    reason: details.reason ?? null,
    errorCode: details.errorCode ?? null,
    errorMessage: details.errorMessage ?? null,
  });
}
process.stdout.write(`${JSON.stringify({ results, responses })}\n`);
await OpenFeature.close();
