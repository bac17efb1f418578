// A mobile-banking page an agent can guide (pages/transfer/transfer?guide_id=…): it shows the guide's steps and
// reports each one the customer reaches (utils/guide.js). The transfer form itself is out of scope here.
const guide = require('../../utils/guide.js');

Page({
  data: { title: '', steps: [], step: 1, state: '' },

  onLoad(query) {
    this.guide = guide.attach(query.guide_id);
    this.guide.load().then((g) => {
      if (!g) return;
      this.setData({ title: g.title, steps: g.steps, step: Math.max(1, g.current_step) });
      this.guide.at(this.data.step);
    });
  },

  onNext() {
    if (this.data.step >= this.data.steps.length) {
      this.guide.done(this.data.step);
      this.setData({ state: 'done' });
      return;
    }
    this.setData({ step: this.data.step + 1 });
    this.guide.at(this.data.step);
  },

  onPrev() {
    if (this.data.step <= 1) return;
    this.setData({ step: this.data.step - 1 });
    this.guide.at(this.data.step);
  },
});
