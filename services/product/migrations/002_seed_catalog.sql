-- The seeded catalog: stable ids that docs, demos and tests can name.
INSERT INTO products (id, name, description, price_cents, currency, stock) VALUES
    ('p-aeropress', 'AeroPress Original', 'Immersion and pressure in one hand-held brewer; makes one to three cups in two minutes.', 3995, 'USD', 60),
    ('p-chemex', 'Chemex Six-Cup', 'Hand-blown glass pour-over carafe with a wooden collar and leather tie.', 4750, 'USD', 30),
    ('p-cupping-set', 'Limited Cupping Set', 'Numbered porcelain cupping bowls and spoons; one left in stock.', 9900, 'USD', 1),
    ('p-decaf', 'Swiss Water Decaf, 500 g', 'Colombian beans decaffeinated with water only; chocolate and caramel notes.', 1450, 'USD', 80),
    ('p-espresso', 'Espresso Blend, 1 kg', 'Medium-dark roast of Brazilian and Ethiopian beans for espresso and milk drinks.', 2400, 'USD', 100),
    ('p-filters', 'Paper Filters, 100 pack', 'Unbleached cone filters, size 02.', 899, 'USD', 200),
    ('p-frother', 'Handheld Milk Frother', 'Battery-powered whisk for lattes and cappuccinos at home.', 3499, 'USD', 35),
    ('p-grinder', 'Conical Burr Grinder', '40 grind settings from espresso to cold brew, steel burrs.', 12900, 'USD', 25),
    ('p-kettle', 'Gooseneck Kettle', 'Temperature-controlled electric kettle with a precise pour spout.', 5900, 'USD', 40),
    ('p-mug', 'Stoneware Mug', 'Hand-glazed 350 ml mug; every one slightly different.', 1800, 'USD', 120),
    ('p-scale', 'Coffee Scale with Timer', '0.1 g resolution up to 2 kg, built-in shot timer.', 2999, 'USD', 50),
    ('p-tamper', 'Espresso Tamper, 58 mm', 'Stainless steel base, walnut handle, calibrated spring.', 2499, 'USD', 45);
