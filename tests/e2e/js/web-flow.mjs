// One run of the OpenFeature web SDK with its OFREP web provider against Lab: the same code
// under Node (web-provider.mjs) and in a browser page (page/entry.mjs, bundled by esbuild).
//
// spec: {"baseUrl", "clientKey", "targetingKey", "attributes"?, "flags": [{"flag", "default"}],
//        "pollIntervalMs"?}
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';
import { OpenFeature, ProviderEvents } from '@openfeature/web-sdk';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function startFlow(spec) {
  // Every HTTP exchange the provider makes, as the page sees it (a refused cross-origin call
  // is a fetch that throws: status null).
  const requests = [];
  const fetchImplementation = async (request, init) => {
    const entry = {
      method: request.method,
      requestBody: await request.clone().text(),
      url: request.url,
      ifNoneMatch: request.headers.get('If-None-Match'),
      status: null,
      etag: null,
    };
    requests.push(entry);
    try {
      const response = await fetch(request, init);
      entry.status = response.status;
      entry.etag = response.headers.get('ETag');
      entry.contentType = response.headers.get('Content-Type');
      entry.body = await response
        .clone()
        .text()
        .then((text) => (text ? JSON.parse(text) : null))
        .catch(() => 'not JSON');
      return response;
    } catch (error) {
      entry.error = String(error);
      throw error;
    }
  };
  const provider = new OFREPWebProvider({
    baseUrl: spec.baseUrl,
    headers: [['Authorization', `Bearer ${spec.clientKey}`]],
    pollInterval: spec.pollIntervalMs ?? 500,
    fetchImplementation,
  });
  const events = [];
  let changes = 0;
  let changesSeen = 0;
  OpenFeature.addHandler(ProviderEvents.ConfigurationChanged, (details) => {
    changes += 1;
    events.push({ event: 'ConfigurationChanged', flagsChanged: details?.flagsChanged ?? null });
  });
  OpenFeature.addHandler(ProviderEvents.Error, (details) => {
    events.push({ event: 'Error', message: details?.message ?? null });
  });
  await OpenFeature.setContext({ ...spec.attributes, targetingKey: spec.targetingKey });
  let ready = null;
  try {
    await OpenFeature.setProviderAndWait(provider);
    ready = true;
  } catch (error) {
    ready = false;
    events.push({ event: 'InitializationFailed', message: String(error) });
  }
  const client = OpenFeature.getClient();

  const evaluate = () =>
    spec.flags.map(({ flag, default: fallback }) => {
      const details = client.getStringDetails(flag, fallback);
      return {
        flag,
        value: details.value,
        variant: details.variant ?? null,
        reason: details.reason ?? null,
        errorCode: details.errorCode ?? null,
        errorMessage: details.errorMessage ?? null,
      };
    });

  const waitFor = async (condition, timeoutMs, what) => {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      }
      await sleep(20);
    }
  };

  return {
    ready,
    requests,
    events,
    evaluate,
    // Until a poll came back 304 (nothing changed for the unit).
    waitForNotModified: async (timeoutMs = 10000) => {
      await waitFor(() => requests.some((r) => r.status === 304), timeoutMs, 'a 304 poll');
      changesSeen = changes;
    },
    // Until a poll brought a changed evaluation (ConfigurationChanged) after the 304 above:
    // the change may arrive before the caller asks.
    waitForChange: (timeoutMs = 10000) =>
      waitFor(() => changes > changesSeen, timeoutMs, 'a ConfigurationChanged event'),
    close: () => OpenFeature.close(),
  };
}
