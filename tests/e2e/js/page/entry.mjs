// The test page's script (bundled by esbuild with the npm packages, nothing from a CDN): runs
// web-flow.mjs with the spec in the page's URL fragment and leaves the flow on `window.labFlow`
// for browser.mjs to drive.
import { startFlow } from '../web-flow.mjs';

const spec = JSON.parse(decodeURIComponent(window.location.hash.slice(1)));
window.labFlow = await startFlow(spec);
document.getElementById('status').textContent = window.labFlow.ready ? 'ready' : 'failed';
document.getElementById('results').textContent = JSON.stringify(window.labFlow.evaluate());
