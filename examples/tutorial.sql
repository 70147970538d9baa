-- The cats-and-dogs tour. Run it from the repository root with the folder of photo sets:
--   pixql --db shop.duckdb --set data=../shared/datasets run examples/tutorial.sql
-- {data} is replaced by that folder (as text inside the quotes below).
COPY cat_and_dog_train OPTIONS (overwrite=True) FROM '{data}/cats_and_dogs_filtered_200px/cat_and_dog_train.csv';
COPY cat_and_dog_test OPTIONS (overwrite=True) FROM '{data}/cats_and_dogs_filtered_200px/cat_and_dog_test.csv';
SELECT label, count(*) FROM cat_and_dog_train GROUP BY label;
BUILD MODEL my_image_classifier USING EfficientNet_Lite0
  OPTIONS (image_col='image', label_col='label', epochs=1, overwrite=true) AS SELECT * FROM cat_and_dog_train;
PREDICT USING my_image_classifier AS SELECT * FROM cat_and_dog_test;
PRINT IMAGE AS SELECT image, label FROM cat_and_dog_test LIMIT 5;
