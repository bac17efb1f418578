// Guided steps (同屏指导): any page named by an agent's guide card reports which step it shows, so the agent
// sees it live. Usage in a page: `const guide = require('../../utils/guide.js')`, then in onLoad(query)
// `this.guide = guide.attach(query.guide_id)` and call `this.guide.at(step)` / `this.guide.done(lastStep)`.
const api = require('./api.js');

function attach(guideId) {
  if (!guideId) return { at() {}, done() {}, load() { return Promise.resolve(null); } };
  const path = '/miniapp/guides/' + encodeURIComponent(guideId);
  const report = (step, done) => api.request('POST', path + '/progress', { step, done: !!done }).catch(() => null);
  return {
    load: () => api.request('GET', path),
    at: (step) => report(step, false),
    done: (step) => report(step, true),
  };
}

module.exports = { attach };
